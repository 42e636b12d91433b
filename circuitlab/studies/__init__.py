"""Studies that run the jobs below many times: `reproduce` (the paper's locating experiments for many tasks,
Figures 1-9) and `track` (edge circuits at every checkpoint of a fine-tuning run)."""
