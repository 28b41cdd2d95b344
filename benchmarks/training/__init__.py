"""Training benchmarks: tracking at scale, tracked fit vs bare LightGBM, search and Ray."""
