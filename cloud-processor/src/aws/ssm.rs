//! The SSM adapter: the HMAC keys' SecureString parameters, read once at
//! start-up. A parameter's value is never logged or put in an error.

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use relay_shared::client::SdkConfig;
use relay_shared::retry::{Class, Classified, classify};

use super::startup::{Startup, StartupError};
use crate::cli::Config;
use crate::pipeline::rules::HmacKey;

/// What the module's Terraform writes into the parameter it creates, for
/// the operator to replace (it keeps no secret in Terraform's state). A
/// processor refuses it rather than hash with a key everyone can read.
pub const PLACEHOLDER: &str = "unset: put the key with `aws ssm put-parameter --overwrite`";

#[derive(Debug, thiserror::Error)]
pub enum SsmError {
    #[error("SSM parameter {name}: GetParameter failed: {message}")]
    Call {
        name: String,
        message: String,
        class: Class,
    },
    #[error("SSM parameter {name} is empty: an HMAC without a secret hides nothing")]
    Empty { name: String },
    #[error(
        "SSM parameter {name} still holds the placeholder the Terraform module wrote: \
         put the key with `aws ssm put-parameter --name {name} --type SecureString --overwrite --value ...`"
    )]
    Placeholder { name: String },
}

impl Classified for SsmError {
    fn class(&self) -> Class {
        match self {
            Self::Call { class, .. } => *class,
            Self::Empty { .. } | Self::Placeholder { .. } => Class::Permanent,
        }
    }
}

/// SSM Parameter Store, for the keys.
#[derive(Debug, Clone)]
pub struct Parameters {
    client: aws_sdk_ssm::Client,
}

impl Parameters {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            client: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(sdk)
                    .interceptor(relay_shared::attempts::RetryCounter)
                    .build(),
            ),
        }
    }

    /// The key in parameter `name`, decrypted: its value, less one
    /// trailing newline, as for a key file.
    pub async fn key(&self, name: &str) -> Result<HmacKey, SsmError> {
        let out = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| call_error(name, e))?;
        let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
        if value == PLACEHOLDER {
            return Err(SsmError::Placeholder {
                name: name.to_owned(),
            });
        }
        let value = value.strip_suffix('\n').unwrap_or(value);
        HmacKey::new(value.as_bytes()).ok_or_else(|| SsmError::Empty {
            name: name.to_owned(),
        })
    }
}

/// `config` with the keys its SSM parameters hold, read as `startup` says
/// (transient failures waited out; a missing parameter or access denied
/// fail at once). Only the parameters in use are read
/// ([`Config::key_parameters_in_use`]).
pub async fn read_keys(
    config: Config,
    sdk: &SdkConfig,
    startup: &Startup,
) -> Result<Config, StartupError<SsmError>> {
    let [current, previous] = config.key_parameters_in_use().map(|p| p.map(str::to_owned));
    if current.is_none() && previous.is_none() {
        return Ok(config);
    }
    let ssm = Parameters::new(sdk);
    let read = |name: Option<String>| {
        let ssm = ssm.clone();
        async move {
            match name {
                Some(name) => startup
                    .wait_for("SSM", "reading the HMAC key's parameter", || ssm.key(&name))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
    };
    let current = read(current).await?;
    let previous = read(previous).await?;
    Ok(config.with_hmac_keys(current, previous))
}

fn call_error<E>(name: &str, e: SdkError<E, aws_sdk_ssm::config::http::HttpResponse>) -> SsmError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let class = classify(&e);
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => relay_shared::client::describe(&e),
    };
    SsmError::Call {
        name: name.to_owned(),
        message,
        class,
    }
}
