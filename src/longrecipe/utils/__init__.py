"""Small shared helpers: atomic writes, logging, seeding, config hashing."""
