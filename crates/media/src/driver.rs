//! tokio driver (todo)
