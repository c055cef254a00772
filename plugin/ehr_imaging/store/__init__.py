"""PostgreSQL: engine and sessions, schema migrations, models. The only package that speaks SQL."""
