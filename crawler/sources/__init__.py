"""The data sources: Bright Data (Bloomberg pages) and yfinance.

They know nothing of the scheduler.
"""
