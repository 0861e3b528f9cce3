"""Quick start: one MMSearch-v0 episode by hand, then a scripted policy over the test split.

python examples/quickstart.py
"""

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents import OraclePolicy, run_episodes, summarize

# ---- one episode, written by hand ----------------------------------------------------------------
env = gym.make("MMSearch-v0", split="test", render_mode="ansi")  # embedded corpus, questions and search
obs, info = env.reset(seed=0, options={"example_id": "corpus-00002"})  # a flag: "what is its capital?"
print("question:", obs["question"])

obs, reward, terminated, truncated, info = env.step("<reason>I do not know this flag.</reason><search><img></search>")
obs, reward, terminated, truncated, info = env.step(
    "<reason>The top result is Aruba.</reason><text_search>Aruba capital</text_search>"
)
obs, reward, terminated, truncated, info = env.step(
    "<reason>The capital is Oranjestad.</reason><answer>Oranjestad</answer>"
)
print(env.render())
print("reward:", reward, "parts:", info["reward_parts"])

# ---- a scripted policy over every 4th test question ----------------------------------------------
policy = OraclePolicy(env.unwrapped.examples)
finals = run_episodes(env, policy, range(0, len(env.unwrapped.examples), 4))
summary = summarize(finals, env.unwrapped.max_searches_per_episode)
print(f"{policy.name}: accuracy {summary.accuracy:.2f}, search ratio {summary.search_ratio_episodes:.2f}")
print("(a scripted check, not a model: it follows each question's ideal search plan, so near 1.00 is expected)")
env.close()
