"""collect: what the product reports, validated, pseudonymised, redacted and buffered."""
