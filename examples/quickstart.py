"""Quick start: one MMSearch-v0 episode by hand, then a scripted policy over the sample.

python examples/quickstart.py
"""

import gymnasium as gym

import mmsearch_env  # noqa: F401  (registers MMSearch-v0)
from agents import OraclePolicy, run_episodes, summarize

# ---- one episode, written by hand ----------------------------------------------------------------
env = gym.make("MMSearch-v0", render_mode="ansi")  # embedded sample data + in-process search
obs, info = env.reset(seed=0, options={"example_id": "sample-arvenia-image-text"})
print("question:", obs["question"])

obs, reward, terminated, truncated, info = env.step("<reason>I do not know this flag.</reason><search><img></search>")
obs, reward, terminated, truncated, info = env.step(
    "<reason>The results say it is the flag of Arvenia.</reason><text_search>capital of Arvenia</text_search>"
)
obs, reward, terminated, truncated, info = env.step("<reason>The capital is Velmont.</reason><answer>Velmont</answer>")
print(env.render())
print("reward:", reward, "parts:", info["reward_parts"])

# ---- a scripted policy over the whole train split ------------------------------------------------
policy = OraclePolicy(env.unwrapped.examples)
finals = run_episodes(env, policy, range(len(env.unwrapped.examples)))
summary = summarize(finals, env.unwrapped.max_searches_per_episode)
print(f"{policy.name}: accuracy {summary.accuracy:.2f}, search ratio {summary.search_ratio_episodes:.2f}")
env.close()
