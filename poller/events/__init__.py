"""Lambda-shaped event records, per source, and the envelope that joins them."""
