"""The TradingView webhook gateway: HTTP alerts in, strategy signals to the router out."""
