"""`crawler dashboard`: the daemon, live, in a browser on loopback (`crawler.dashboard.server`)."""
