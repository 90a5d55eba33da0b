//! Integration tests of the agent crate (one binary, one module per concern).

mod openclaw;
mod supervise;
