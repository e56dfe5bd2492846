"""Authentication: Argon2 passwords, JWT access tokens, rotating refresh tokens, revocation, WS tickets."""
