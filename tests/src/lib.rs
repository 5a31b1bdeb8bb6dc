//! Cross-face tests live in `tests/`.
