"""The resolved plan (``--plan``): every model's settings, budget, costs and schedule, before training."""
