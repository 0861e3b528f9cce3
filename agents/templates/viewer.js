(function () {
  "use strict";
  var facets = JSON.parse(document.getElementById("mv-facets").textContent);
  var articles = document.querySelectorAll("article.episode");
  var selects = document.querySelectorAll("select[data-facet]");
  var query = document.getElementById("mv-q");
  var count = document.getElementById("mv-count");
  var texts = [];
  for (var i = 0; i < articles.length; i++) { texts.push(articles[i].textContent.toLowerCase()); }
  function apply() {
    var q = query.value.trim().toLowerCase();
    var shown = 0;
    for (var i = 0; i < articles.length; i++) {
      var ok = true;
      for (var j = 0; j < selects.length && ok; j++) {
        var want = selects[j].value;
        if (want !== "" && facets[i][selects[j].getAttribute("data-facet")] !== want) { ok = false; }
      }
      if (ok && q !== "" && texts[i].indexOf(q) < 0) { ok = false; }
      articles[i].hidden = !ok;
      if (ok) { shown++; }
    }
    count.textContent = shown + " of " + articles.length + " episodes shown";
  }
  function setOpen(open) {
    var all = document.querySelectorAll("article.episode > details");
    for (var i = 0; i < all.length; i++) { all[i].open = open; }
  }
  function remember() {
    var params = new URLSearchParams();
    for (var j = 0; j < selects.length; j++) {
      if (selects[j].value !== "") { params.set(selects[j].getAttribute("data-facet"), selects[j].value); }
    }
    if (query.value !== "") { params.set("q", query.value); }
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* file:// may refuse */ }
  }
  function update() { apply(); remember(); }
  var initial = new URLSearchParams(location.hash.slice(1));
  for (var j = 0; j < selects.length; j++) {
    var wanted = initial.get(selects[j].getAttribute("data-facet"));
    for (var k = 0; wanted !== null && k < selects[j].options.length; k++) {
      if (selects[j].options[k].value === wanted) { selects[j].value = wanted; }
    }
    selects[j].addEventListener("change", update);
  }
  query.value = initial.get("q") || "";
  query.addEventListener("input", update);
  document.getElementById("mv-open").addEventListener("click", function () { setOpen(true); });
  document.getElementById("mv-close").addEventListener("click", function () { setOpen(false); });
  apply();
  document.documentElement.setAttribute("data-viewer-ready", String(articles.length));
})();
