"""The long-running process: wiring, control socket, systemd notifications."""
