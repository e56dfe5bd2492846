"""PostgreSQL: tables, repositories, the unit of work that writes the outbox, and read-side views."""
