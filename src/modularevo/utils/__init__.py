"""Small shared helpers: logging, seeding, atomic output folders, run metadata."""
