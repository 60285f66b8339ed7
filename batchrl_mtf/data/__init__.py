"""From logs to MDP datasets: features, reward, cleaning and accounting, transitions, split, files."""
