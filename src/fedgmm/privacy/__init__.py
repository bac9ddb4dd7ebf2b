"""Record-level differential privacy for client releases (DP-EM, local DP rounds) and membership audits."""
