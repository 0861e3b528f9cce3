"""Curated tables of the other common names a ground truth goes by, read by :mod:`.answers`.

Each table lists only forms a strict grader would accept as the same answer: a usual spelling beside a
source's unusual one, a noun demonym beside an adjective one, the name people use for an emoji's picture.
"""

from __future__ import annotations

__all__ = [
    "BRITISH_AMERICAN",
    "CAPITAL_COMMON_NAMES",
    "CURRENCY_COMMON_NAMES",
    "DEMONYM_COMMON_FORMS",
    "EMOJI_COMMON_NAMES",
    "EMOJI_NOT_ITS_HEAD",
    "EMOJI_NO_HEAD",
    "LANGUAGE_COMMON_NAMES",
    "TRANSLITERATE",
]

#: letters NFKD does not decompose, with their usual ASCII spelling ("złoty" is "zloty", not "zoty")
TRANSLITERATE = str.maketrans({
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
    "ß": "ss", "ı": "i", "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D", "ħ": "h", "’": "'", "ʻ": "'", "ʼ": "'",
})  # fmt: skip

#: British and American spellings (and words) of the same thing, both ways round
BRITISH_AMERICAN = {
    "aeroplane": "airplane", "colour": "color", "grey": "gray", "theatre": "theater", "tyre": "tire",
    "doughnut": "donut", "moustache": "mustache", "pyjamas": "pajamas", "jewellery": "jewelry",
    "centre": "center", "disc": "disk", "prawn": "shrimp", "biscuit": "cookie",
    "railway": "railroad", "rouble": "ruble", "axe": "ax", "mum": "mom", "postbox": "mailbox",
    "plaster": "bandage", "aubergine": "eggplant", "courgette": "zucchini",
}  # fmt: skip

#: demonyms beside their other usual forms: the noun beside the adjective, the usual spelling beside a
#: source's unusual one
DEMONYM_COMMON_FORMS = {
    "Maldivan": ["Maldivian"], "Kirghiz": ["Kyrgyz", "Kyrgyzstani"], "Tadzhik": ["Tajik", "Tajikistani"],
    "Finnish": ["Finn"], "Polish": ["Pole"], "Turkish": ["Turk"], "Danish": ["Dane"], "Swedish": ["Swede"],
    "Spanish": ["Spaniard"], "British": ["Briton", "Brit"], "Dutch": ["Dutchman", "Netherlander"],
    "Irish": ["Irishman"], "French": ["Frenchman"], "Serbian": ["Serb"], "Croatian": ["Croat"],
    "Slovak": ["Slovakian"], "Slovene": ["Slovenian"], "Ecuadorean": ["Ecuadorian"], "Djibouti": ["Djiboutian"],
    "Gibraltar": ["Gibraltarian"], "Greenlandic": ["Greenlander"], "Icelander": ["Icelandic"], "Laotian": ["Lao"],
    "Sao Tomean": ["Santomean"], "Guianan": ["French Guianese", "Guianese"], "East Timorese": ["Timorese"],
    "St. Maartener": ["Sint Maartener"], "Manx": ["Manxman"], "Cape Verdian": ["Cape Verdean"],
    "Comoran": ["Comorian"], "Burkinabe": ["Burkinabé"], "Mosotho": ["Basotho"], "Motswana": ["Batswana"],
    "Argentine": ["Argentinian", "Argentinean"], "Nepalese": ["Nepali"], "Hong Konger": ["Hongkonger"],
    "Surinamer": ["Surinamese"], "Saudi Arabian": ["Saudi"], "Monegasque": ["Monacan"],
    "Guinea-Bissauan": ["Bissau-Guinean"], "Equatorial Guinean": ["Equatoguinean"], "Filipino": ["Filipina"],
    "Sammarinese": ["San Marinese"], "Ålandish": ["Ålander"], "Turkmen": ["Turkmenistani"],
}  # fmt: skip

#: capitals beside the other names they commonly go by
CAPITAL_COMMON_NAMES = {
    "Kyiv": ["Kiev"], "Bern": ["Berne"], "Ulan Bator": ["Ulaanbaatar"], "Naypyidaw": ["Nay Pyi Taw", "Naypyitaw"],
    "Port of Spain": ["Port-of-Spain"], "Pristina": ["Prishtina"], "Tehran": ["Teheran"], "New Delhi": ["Delhi"],
    "Ashgabat": ["Ashkhabad"], "El Aaiún": ["Laayoune"], "Guatemala City": ["Guatemala"],
    "Panama City": ["Panama"], "Kuwait City": ["Kuwait"], "Luxembourg": ["Luxembourg City"],
    "City of San Marino": ["San Marino"], "City of Victoria": ["Victoria"], "Vatican City": ["Vatican"],
    "Singapore": ["Singapore City"], "Monaco": ["Monaco-Ville"], "Djibouti": ["Djibouti City"],
}  # fmt: skip

#: currency code -> the names people use beside the source's (bare or official) name
CURRENCY_COMMON_NAMES = {
    "GBP": ["pound sterling", "sterling"], "USD": ["US dollar", "American dollar"],
    "CNY": ["renminbi", "RMB", "Chinese renminbi"], "XAF": ["CFA franc"], "XOF": ["CFA franc"],
    "ILS": ["shekel", "Israeli shekel", "new shekel"], "TWD": ["Taiwan dollar", "Taiwanese dollar"],
    "VES": ["bolívar", "Venezuelan bolívar"], "CUC": ["Cuban peso"], "BAM": ["convertible mark"],
    "MNT": ["tugrik", "Mongolian tugrik"], "WST": ["tala"], "RUB": ["Russian rouble"], "BYN": ["Belarusian rouble"],
    "GMD": ["Gambian dalasi"], "MKD": ["Macedonian denar"], "DKK": ["Danish krone"], "GEL": ["Georgian lari"],
    "KGS": ["Kyrgyz som"], "UZS": ["Uzbek som"], "TJS": ["Tajik somoni"], "KZT": ["Kazakh tenge"],
    "TMT": ["Turkmen manat"], "VND": ["dong", "Vietnamese dong"], "AED": ["UAE dirham", "Emirati dirham"],
}  # fmt: skip

#: languages beside the other names they go by (also a dialect name's language: "Swiss German" is German)
LANGUAGE_COMMON_NAMES = {
    "Swiss German": ["German"], "Austro-Bavarian German": ["German", "Bavarian"], "Moldavian": ["Romanian"],
    "Maldivian": ["Dhivehi"], "Chinese": ["Mandarin", "Mandarin Chinese"], "Chewa": ["Chichewa", "Nyanja"],
    "Kyrgyz": ["Kirghiz"], "Slovene": ["Slovenian"], "Sinhala": ["Sinhalese"], "Dari": ["Persian"],
    "Bengali": ["Bangla"], "Greenlandic": ["Kalaallisut"], "Nepali": ["Nepalese"], "Azerbaijani": ["Azeri"],
    "Berber": ["Tamazight"], "Belizean Creole": ["Kriol", "Creole"], "Cook Islands Māori": ["Māori"],
    "Lao": ["Laotian"], "Khmer": ["Cambodian"], "Kirundi": ["Rundi"], "Tetum": ["Tetun"], "Swahili": ["Kiswahili"],
    "Malay": ["Bahasa Malaysia", "Malaysian"], "Māori": ["Maori"], "Burmese": ["Myanmar"],
}  # fmt: skip

#: emoji whose picture most people name differently from the Unicode name
EMOJI_COMMON_NAMES = {
    "chipmunk": ["squirrel"], "black bird": ["crow", "raven"], "locked": ["padlock"],
    "fishing pole": ["fishing rod", "rod"], "airplane": ["plane", "aircraft"],
    "mobile phone": ["cell phone", "cellphone", "smartphone", "mobile"], "fire engine": ["fire truck", "firetruck"],
    "railway car": ["train car", "carriage", "railway carriage", "wagon"], "metro": ["subway", "underground"],
    "tram": ["streetcar", "trolley"], "light rail": ["tram"], "suspension railway": ["monorail"],
    "optical disk": ["CD", "DVD", "compact disc"], "videocassette": ["VHS", "VHS tape", "video tape", "videotape"],
    "flying disc": ["frisbee"], "ear of corn": ["maize", "corn on the cob", "corncob"],
    "globe showing Americas": ["globe", "earth", "world"], "globe showing Asia-Australia": ["globe", "earth", "world"],
    "globe showing Europe-Africa": ["globe", "earth", "world"],
    "last quarter moon face": ["moon", "half moon", "moon face", "quarter moon"],
    "first quarter moon face": ["moon", "half moon", "moon face", "quarter moon"],
    "sun behind large cloud": ["sun and cloud", "partly cloudy", "sun behind cloud"],
    "mahjong red dragon": ["mahjong tile", "mahjong", "red dragon"], "seedling": ["sprout", "sapling"],
    "four leaf clover": ["four-leaf clover"], "leaf fluttering in wind": ["leaf", "leaves"],
    "magnifying glass tilted right": ["magnifying glass", "magnifier"],
    "magnifying glass tilted left": ["magnifying glass", "magnifier"],
    "chart increasing": ["chart", "graph", "line chart", "line graph"],
    "chart decreasing": ["chart", "graph", "line chart", "line graph"],
    "hammer and wrench": ["wrench and hammer", "tools"], "hammer and pick": ["pick and hammer", "hammer and pickaxe"],
    "fork and knife with plate": ["knife and fork", "plate", "cutlery"], "fork and knife": ["knife and fork", "cutlery"],
    "dog face": ["dog", "puppy"], "rabbit face": ["rabbit", "bunny"], "cat face": ["cat"], "hippopotamus": ["hippo"],
    "moai": ["Easter Island statue", "Easter Island head"], "hamsa": ["hamsa hand", "hand of Fatima"],
    "label": ["tag", "price tag"], "page with curl": ["page", "document"],
    "clinking beer mugs": ["beer", "beers", "beer mugs", "cheers"], "performing arts": ["theater masks", "masks"],
    "video game": ["game controller", "controller", "gamepad"], "flower playing cards": ["hanafuda"],
    "musical keyboard": ["piano"], "motorcycle": ["motorbike"], "camping": ["tent"],
    "turtle": ["tortoise"], "baby chick": ["baby chicken"], "t-shirt": ["tee", "shirt"],
    "bouquet": ["flowers", "bunch of flowers"], "paperclip": ["paper clip"], "triangular ruler": ["set square"],
    "satellite antenna": ["satellite dish"], "closed mailbox with raised flag": ["mail box", "letterbox"],
    "prayer beads": ["rosary"], "electric plug": ["power plug"], "helicopter": ["chopper"],
    "locomotive": ["steam locomotive", "steam engine", "steam train", "train"],
    "construction": ["barrier", "roadblock", "road barrier", "construction barrier"],
    "police car light": ["siren", "police light", "police siren", "emergency light"],
    "1st place medal": ["gold medal", "first place medal"], "baguette bread": ["baguette"],
    "stuffed flatbread": ["pita", "pita bread"], "bowl with spoon": ["cereal", "bowl of cereal"],
    "cut of meat": ["steak"], "leafy green": ["lettuce", "greens"], "guide dog": ["seeing eye dog", "service dog"],
    "cheese wedge": ["cheese"], "beverage box": ["juice box"], "ice": ["ice cube", "ice cubes"],
    "dna": ["double helix"], "adhesive bandage": ["band-aid", "plaster"],
    "nesting dolls": ["matryoshka", "matryoshka doll", "Russian dolls", "Russian doll", "nesting doll"],
    "moose": ["elk"], "ginger root": ["ginger"], "spade suit": ["spade", "spades"], "heart suit": ["heart", "hearts"],
    "club suit": ["club", "clubs"], "diamond suit": ["diamond", "diamonds"], "pick": ["pickaxe", "pick axe"],
    "rescue worker’s helmet": ["hard hat", "safety helmet"], "shinto shrine": ["torii", "torii gate"],
    "envelope": ["letter", "mail"], "rice cracker": ["senbei"], "fried shrimp": ["tempura", "shrimp tempura"],
    "custard": ["pudding", "flan"], "tropical drink": ["cocktail"], "bread": ["loaf"],
    "hamburger": ["cheeseburger"], "sunrise": ["dawn"], "glasses": ["eyeglasses", "spectacles"],
    "sunglasses": ["shades"], "movie camera": ["video camera", "film camera"], "headphone": ["headset"],
    "red paper lantern": ["Chinese lantern"], "hot dog": ["hotdog"], "pickup truck": ["pickup"],
    "amphora": ["vase"], "boar": ["wild boar"], "bikini": ["swimsuit"], "credit card": ["bank card"],
    "bell with slash": ["muted bell", "no bell", "mute"], "building construction": ["crane", "construction site"],
    "laptop": ["laptop computer"], "french fries": ["chips"], "shovel": ["spade"], "roller skate": ["rollerskate"], "stadium": ["arena"],
}  # fmt: skip

#: last words that do not name the thing an emoji shows ("dog face" is a dog, "hot dog" no dog)
EMOJI_NO_HEAD = ("face", "right", "left", "wind", "increasing", "decreasing", "suit")
#: emoji whose last word is a different thing from the picture
EMOJI_NOT_ITS_HEAD = ("hot dog",)
