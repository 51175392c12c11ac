//! The real NSM, through `/dev/nsm` and the driver of
//! `aws-nitro-enclaves-nsm-api` (one ioctl per request).
//!
//! NOTE: this backend runs only inside a Nitro Enclave. The tests here check
//! what can be checked elsewhere: that opening fails with a clear error
//! without the device, and that an oversized request is rejected before the
//! ioctl. The request encoding and the error mapping shared with the mock
//! are tested in the parent module.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use aws_nitro_enclaves_nsm_api::driver::{nsm_exit, nsm_init, nsm_process_request};

use super::{MAX_REQUEST_LEN, Nsm, NsmError, encoded_len, request_name};

/// The NSM device node inside an enclave.
pub const DEVICE_PATH: &str = "/dev/nsm";

/// The NSM device.
#[derive(Debug)]
pub struct DeviceNsm {
    /// The descriptor from `nsm_init`, closed on drop.
    fd: i32,
    /// Serialises ioctls on the descriptor.
    lock: Mutex<()>,
}

impl DeviceNsm {
    /// Opens `/dev/nsm`.
    pub fn open() -> Result<Self, NsmError> {
        // nsm_init only returns -1 on failure, so open the node first to get the reason.
        let path = Path::new(DEVICE_PATH);
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| NsmError::DeviceOpen { path: path.to_owned(), error })?;

        let fd = nsm_init();
        if fd < 0 {
            return Err(NsmError::DeviceOpen {
                path: path.to_owned(),
                error: std::io::Error::other("nsm_init returned an invalid descriptor"),
            });
        }
        tracing::info!(path = DEVICE_PATH, "opened the NSM device");
        Ok(Self { fd, lock: Mutex::new(()) })
    }
}

/// Rejects a request the driver would refuse for its size, before any ioctl.
pub(crate) fn check_request_size(request: &Request) -> Result<(), Response> {
    let len = encoded_len(request);
    if len > MAX_REQUEST_LEN {
        tracing::warn!(request = request_name(request), len, max = MAX_REQUEST_LEN, "NSM request too large");
        return Err(Response::Error(ErrorCode::InputTooLarge));
    }
    Ok(())
}

impl Nsm for DeviceNsm {
    fn process(&self, request: Request) -> Response {
        if let Err(response) = check_request_size(&request) {
            return response;
        }
        let _guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        nsm_process_request(self.fd, request)
    }
}

impl Drop for DeviceNsm {
    fn drop(&mut self) {
        nsm_exit(self.fd);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;

    #[test]
    fn open_without_device_names_path() {
        if Path::new(DEVICE_PATH).exists() {
            return; // Inside an enclave: nothing to check here.
        }
        let err = DeviceNsm::open().unwrap_err();
        assert!(matches!(err, NsmError::DeviceOpen { ref path, .. } if path == Path::new("/dev/nsm")), "{err}");
        assert!(err.to_string().contains("only inside a Nitro Enclave"), "{err}");
    }

    #[test]
    fn oversized_request_rejected_before_ioctl() {
        let big = Some(ByteBuf::from(vec![0u8; 1500]));
        let request = Request::Attestation { user_data: big.clone(), nonce: big.clone(), public_key: big };
        assert!(encoded_len(&request) > MAX_REQUEST_LEN);
        let response = check_request_size(&request).unwrap_err();
        assert!(matches!(response, Response::Error(ErrorCode::InputTooLarge)), "{response:?}");
    }

    #[test]
    fn request_at_limit_passes_size_check() {
        let field = Some(ByteBuf::from(vec![0u8; 1024]));
        let request = Request::Attestation { user_data: field.clone(), nonce: field.clone(), public_key: field };
        assert!(check_request_size(&request).is_ok());
    }
}
