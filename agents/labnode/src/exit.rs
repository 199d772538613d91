//! The one failure type of the binary and the exit codes it maps to: 0 success, 1 a
//! failure while running, 2 bad arguments or configuration (128+N: interrupted by signal N,
//! set where the signal is handled).

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The exit code: 1 a failure while running, 2 bad arguments or configuration.
    pub code: u8,
    /// What went wrong, printed after `labnode: `.
    pub message: String,
}

impl Failure {
    /// Bad arguments or configuration: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    /// A failure while running: exit code 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}
