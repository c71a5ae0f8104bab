"""The lecture's mathematics, each claim a function that demonstrates it."""
