"""The worker side: built-in job types (the full worker arrives with the server)."""
