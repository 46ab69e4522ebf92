"""The simulated exchanges: one process standing in for coinbase, kraken, binance and alpaca."""
