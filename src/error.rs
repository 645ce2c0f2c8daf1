//! Why a run did not succeed, from every layer's own error type: the class decides the exit code (one
//! mapping, in `exit_code.rs`), the message and hint go to the console and the report.

use crate::report::OutcomeClass;

#[derive(Debug, Clone)]
pub struct Failure {
    pub class: OutcomeClass,
    pub message: String,
    pub hint: Option<String>,
    /// The last lines of a log that shows why (a server that died while starting).
    pub log_tail: Option<String>,
    /// Another attempt may succeed: the infrastructure failed, not the agent or the job.
    pub retryable: bool,
    /// The sandbox lacked resources (not ready in time, out of memory): a retry may ask for more.
    pub lacked_resources: bool,
}

impl Failure {
    pub fn new(class: OutcomeClass, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
            hint: None,
            log_tail: None,
            retryable: false,
            lacked_resources: false,
        }
    }

    /// The same failure, marked as one another attempt may not have.
    pub fn retryable(mut self) -> Failure {
        self.retryable = true;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// The report's one-sentence message: the message, then the log tail if any.
    pub fn report_message(&self) -> String {
        match &self.log_tail {
            Some(tail) => format!("{}\n{tail}", self.message),
            None => self.message.clone(),
        }
    }
}

impl From<crate::backend::Error> for Failure {
    fn from(e: crate::backend::Error) -> Failure {
        use crate::backend::ErrorKind;
        let class = match &e.kind {
            ErrorKind::Failed | ErrorKind::Transient | ErrorKind::NotReady | ErrorKind::OutOfResources => {
                OutcomeClass::Infrastructure
            }
            ErrorKind::Unsure(_) => OutcomeClass::LeftBehind,
            ErrorKind::Interrupted => OutcomeClass::Interrupted,
        };
        // A bad image or a refused key fails again; a busy provider, a slow or starved sandbox may not.
        let retryable = matches!(e.kind, ErrorKind::Transient | ErrorKind::NotReady | ErrorKind::OutOfResources);
        let lacked_resources = matches!(e.kind, ErrorKind::NotReady | ErrorKind::OutOfResources);
        Failure { class, message: e.message, hint: e.hint, log_tail: e.log_tail, retryable, lacked_resources }
    }
}

impl From<crate::agent::Error> for Failure {
    fn from(e: crate::agent::Error) -> Failure {
        match e {
            crate::agent::Error::Interrupted => Failure::new(OutcomeClass::Interrupted, "interrupted"),
            // The server refused what ohrun asked (a rejected key, a configuration it cannot take):
            // another attempt would be refused the same way. A busy or failing server may not be.
            crate::agent::Error::Api(ref api) if api.status.is_some_and(|s| s != 408 && s != 429 && s < 500) => {
                Failure::new(OutcomeClass::Infrastructure, e.to_string())
            }
            other => Failure::new(OutcomeClass::Infrastructure, other.to_string()).retryable(),
        }
    }
}

impl From<crate::settings::Problems> for Failure {
    fn from(p: crate::settings::Problems) -> Failure {
        Failure::new(OutcomeClass::UsageError, p.problems.join("; "))
    }
}
