"""What an operator does besides syncing: roll back, check health, see the status."""
