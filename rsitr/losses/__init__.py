"""Training objectives and the strategies that shape them (EBA, negative recycling, KER, FTF)."""
