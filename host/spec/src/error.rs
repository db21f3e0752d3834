//! What a record's rules refuse. The control plane turns these into its own errors (a 404 or a 400).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such version (or other named part) in a record.
    #[error("{0}")]
    NotFound(String),
    /// A name, path or record that breaks a rule, with the rule.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
