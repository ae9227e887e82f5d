//! Lambda adapter: the two calls the operator tools make on the deployed
//! function (its timeout for `check`, a synchronous invoke for `replay`).
//! The only place the processor names an `aws_sdk_lambda` type.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

/// One deployed function.
#[derive(Debug, Clone)]
pub struct Function {
    client: Client,
    name: String,
}

impl Function {
    pub fn new(sdk: &relay_shared::client::SdkConfig, name: impl Into<String>) -> Self {
        Self {
            client: Client::from_conf(
                aws_sdk_lambda::config::Builder::from(sdk)
                    .interceptor(relay_shared::attempts::RetryCounter)
                    .build(),
            ),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function's configured timeout, in seconds.
    pub async fn timeout_secs(&self) -> Result<u32, String> {
        self.client
            .get_function_configuration()
            .function_name(&self.name)
            .send()
            .await
            .map(|f| u32::try_from(f.timeout.unwrap_or(3)).unwrap_or(0))
            .map_err(|e| {
                format!(
                    "{}: {}; fix RELAY_FUNCTION_NAME or grant lambda:GetFunctionConfiguration",
                    self.name,
                    relay_shared::client::describe(&e)
                )
            })
    }

    /// Invokes the function synchronously with `event`; a function error
    /// comes back with the function's own report.
    pub async fn invoke(&self, event: &serde_json::Value) -> Result<(), String> {
        let out = self
            .client
            .invoke()
            .function_name(&self.name)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(event.to_string()))
            .send()
            .await
            .map_err(|e| relay_shared::client::describe(&e))?;
        match out.function_error {
            None => Ok(()),
            Some(kind) => {
                let detail = out
                    .payload
                    .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                    .unwrap_or_default();
                Err(format!("the function failed ({kind}): {detail}"))
            }
        }
    }
}
