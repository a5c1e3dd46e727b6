//! shieldcall client: not built yet; see the project issues.
