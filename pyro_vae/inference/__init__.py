"""Routes to a model's parameters other than training by ``fit``: exact, EM, MCMC."""
