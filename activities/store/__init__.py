"""PostgreSQL store: migrations, repository, and the activities that write to it."""
