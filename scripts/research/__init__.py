"""Research runs: cross-radar folds, oracle ceilings, the learnability check, the why-ConvLSTM study, the export of the shipped model."""
