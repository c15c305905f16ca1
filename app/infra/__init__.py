"""Infrastructure every part of the API uses: errors, database, metrics, body limit, security, embedded worker."""
