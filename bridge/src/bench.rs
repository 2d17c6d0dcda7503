//! The ingest benchmark (being written).
