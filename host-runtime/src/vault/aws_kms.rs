//! The AWS KMS master key: a symmetric KMS key that makes and unwraps the vault's tenant keys
//! (`GenerateDataKey`, `Decrypt`, `ReEncrypt`), the key context as the KMS encryption context.
//! The master key never leaves KMS.
//!
//! The spec names the key by alias (`aws-kms:alias/sigil-vault;region=…`): new data keys are made
//! under whatever key the alias names, and [`MasterKey::rotate`] makes a new key and moves the
//! alias to it (KMS's own rotation keeps the key id and so could not be retired key by key). A
//! spec that names a bare key id or key ARN works for everything but rotation, which it refuses.
//!
//! With replica regions (`replicas=`), the keys are multi-Region keys: a data key wrapped in one
//! region unwraps in every other, so while the primary region cannot be reached, tenant keys are
//! made and unwrapped in a replica (see `crate::kms` for failover and failback). A wrapped key is
//! always labelled with the key's ARN in the primary region, whichever region wrapped it.

use std::collections::HashMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyState, KeyUsageType};
use zeroize::Zeroizing;

use super::master::{DataKeyBytes, KeyContext, MasterKey, NewDataKey, WrappedKey};
use super::VaultError;
use crate::kms::{alias_name, arn_in_region, kms_error, KmsError, KmsErrorKind, Regions};
use crate::signer::KmsOptions;

/// A symmetric AWS KMS key (by alias, in one region or several) as the vault's master key.
pub struct AwsKmsMasterKey {
    regions: Regions,
    /// The key as the spec names it (an alias, normally).
    key: String,
}

impl std::fmt::Debug for AwsKmsMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsMasterKey")
            .field("key", &self.key)
            .field("regions", &self.regions.names())
            .finish_non_exhaustive()
    }
}

impl From<KmsError> for VaultError {
    fn from(e: KmsError) -> Self {
        match e.kind {
            KmsErrorKind::Unreachable | KmsErrorKind::Busy => VaultError::Unavailable(e.message),
            KmsErrorKind::Config | KmsErrorKind::KeyUsage => VaultError::Config(e.message),
            KmsErrorKind::NotFound => VaultError::NotFound(e.message),
            KmsErrorKind::Disabled => VaultError::Disabled(e.message),
            KmsErrorKind::Denied => VaultError::Denied(e.message),
            KmsErrorKind::InvalidCiphertext => VaultError::WrongContext(e.message),
            KmsErrorKind::Other => VaultError::Invalid(e.message),
        }
    }
}

/// The encryption context KMS takes.
fn encryption_context(context: &KeyContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The key id at the end of a key ARN (or the id itself): multi-Region keys share it in every
/// region.
fn key_id_of(arn: &str) -> &str {
    arn.rsplit_once(":key/").map_or(arn, |(_, id)| id)
}

fn data_key(plain: Option<Blob>, what: &str) -> Result<DataKeyBytes, VaultError> {
    let plain = Zeroizing::new(plain.map(Blob::into_inner).unwrap_or_default());
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(VaultError::Corrupt(format!(
            "KMS returned a {what} of {} bytes, not 32",
            plain.len()
        )));
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

impl AwsKmsMasterKey {
    /// The KMS key `options` name, which must be an enabled symmetric encryption key (checked
    /// with DescribeKey, in a replica when the primary cannot be reached).
    ///
    /// ```no_run
    /// use host_runtime::signer::KmsOptions;
    /// use host_runtime::vault::{AwsKmsMasterKey, MasterKey};
    ///
    /// let mut options = KmsOptions::new("alias/sigil-vault");
    /// options.region = Some("eu-west-1".into());
    /// let master = AwsKmsMasterKey::open(&options)?;
    /// println!("new data keys are wrapped under {}", master.current_key_id()?);
    /// # Ok::<(), host_runtime::vault::VaultError>(())
    /// ```
    pub fn open(options: &KmsOptions) -> Result<Self, VaultError> {
        let master = AwsKmsMasterKey {
            regions: Regions::connect(options)?,
            key: options.key.clone(),
        };
        master.current_key_id()?;
        Ok(master)
    }

    /// Creates a symmetric key (multi-Region and replicated to every replica region when there
    /// are replicas) and, when `options.key` is an alias, creates that alias for it in every
    /// region. For setting up a vault, and for tests.
    pub fn create(options: &KmsOptions) -> Result<Self, VaultError> {
        let regions = Regions::connect(options)?;
        let arn = regions.create_key(
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
            "Sigil vault master key".into(),
        )?;
        if let Some(alias) = alias_name(&options.key) {
            regions.point_alias(&alias, &arn, false)?;
        }
        Ok(AwsKmsMasterKey {
            regions,
            key: options.key.clone(),
        })
    }

    /// A key ARN as the primary region names it.
    fn primary_arn(&self, arn: &str) -> String {
        arn_in_region(arn, self.regions.primary())
    }
}

impl MasterKey for AwsKmsMasterKey {
    fn describe(&self) -> String {
        format!(
            "AWS KMS key {} in {}",
            self.key,
            self.regions.names().join(", ")
        )
    }

    fn current_key_id(&self) -> Result<String, VaultError> {
        let key = self.key.clone();
        let metadata = self.regions.call(move |client, region| {
            let key = arn_in_region(&key, &region);
            async move {
                let output = client
                    .describe_key()
                    .key_id(&key)
                    .send()
                    .await
                    .map_err(|e| kms_error(&format!("KMS cannot describe `{key}`"), e))?;
                output.key_metadata.ok_or_else(|| {
                    KmsError::new(
                        KmsErrorKind::Other,
                        format!("KMS described `{key}` without metadata"),
                    )
                })
            }
        })?;
        if metadata.key_usage() != Some(&KeyUsageType::EncryptDecrypt)
            || metadata.key_spec() != Some(&KeySpec::SymmetricDefault)
        {
            return Err(VaultError::Config(format!(
                "KMS key `{}` is not a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)",
                self.key
            )));
        }
        if let Some(state @ (KeyState::Disabled | KeyState::PendingDeletion)) = metadata.key_state()
        {
            return Err(VaultError::Disabled(format!(
                "KMS key `{}` ({}) is {}",
                self.key,
                metadata.arn().unwrap_or(""),
                state.as_str()
            )));
        }
        let arn = metadata.arn().ok_or_else(|| {
            VaultError::Invalid(format!("KMS described `{}` without its ARN", self.key))
        })?;
        Ok(self.primary_arn(arn))
    }

    fn generate_data_key(&self, context: &KeyContext) -> Result<NewDataKey, VaultError> {
        let (key, context) = (self.key.clone(), encryption_context(context));
        let output = self.regions.call(move |client, region| {
            let request = client
                .generate_data_key()
                .key_id(arn_in_region(&key, &region))
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context.clone()));
            let key = key.clone();
            async move {
                request
                    .send()
                    .await
                    .map_err(|e| kms_error(&format!("KMS cannot make a data key under `{key}`"), e))
            }
        })?;
        let plaintext = data_key(output.plaintext, "data key")?;
        let arn = output.key_id.ok_or_else(|| {
            VaultError::Invalid("KMS made a data key without naming its key".into())
        })?;
        let blob = output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| {
                VaultError::Invalid("KMS made a data key without its ciphertext".into())
            })?;
        Ok(NewDataKey {
            plaintext,
            wrapped: WrappedKey {
                master_key_id: self.primary_arn(&arn),
                blob,
            },
        })
    }

    fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError> {
        let (master, context) = (wrapped.master_key_id.clone(), encryption_context(context));
        let blob = Blob::new(wrapped.blob.clone());
        let output = self.regions.call(move |client, region| {
            // Naming the key makes KMS refuse a blob wrapped under any other key.
            let key = arn_in_region(&master, &region);
            let request = client
                .decrypt()
                .key_id(&key)
                .ciphertext_blob(blob.clone())
                .set_encryption_context(Some(context.clone()));
            async move {
                request.send().await.map_err(|e| {
                    kms_error(&format!("KMS cannot unwrap a data key under `{key}`"), e)
                })
            }
        })?;
        data_key(output.plaintext, "data key")
    }

    fn rewrap(&self, wrapped: &WrappedKey, context: &KeyContext) -> Result<WrappedKey, VaultError> {
        let (master, key) = (wrapped.master_key_id.clone(), self.key.clone());
        let context = encryption_context(context);
        let blob = Blob::new(wrapped.blob.clone());
        let output = self.regions.call(move |client, region| {
            let source = arn_in_region(&master, &region);
            let request = client
                .re_encrypt()
                .ciphertext_blob(blob.clone())
                .source_key_id(&source)
                .set_source_encryption_context(Some(context.clone()))
                .destination_key_id(arn_in_region(&key, &region))
                .set_destination_encryption_context(Some(context.clone()));
            async move {
                request.send().await.map_err(|e| {
                    kms_error(&format!("KMS cannot rewrap a data key from `{source}`"), e)
                })
            }
        })?;
        let arn = output.key_id.ok_or_else(|| {
            VaultError::Invalid("KMS rewrapped a data key without naming its key".into())
        })?;
        let blob = output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| VaultError::Invalid("KMS rewrapped a data key without it".into()))?;
        Ok(WrappedKey {
            master_key_id: self.primary_arn(&arn),
            blob,
        })
    }

    /// A new symmetric key (replicated like the backend's regions), and the alias moved to it in
    /// every region. Needs every region reachable; a failure part-way leaves the new key
    /// unused (the alias still names the old one where it was not moved) and is safe to retry.
    fn rotate(&self) -> Result<String, VaultError> {
        let alias = alias_name(&self.key).ok_or_else(|| {
            VaultError::Invalid(format!(
                "`{}` is a key, not an alias: rotation makes a new key and moves an alias to it, \
                 so name the master key by alias (`aws-kms:alias/…`)",
                self.key
            ))
        })?;
        let previous = self.current_key_id()?;
        let arn = self.regions.create_key(
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
            format!("Sigil vault master key after {previous}"),
        )?;
        self.regions.point_alias(&alias, &arn, true)?;
        Ok(self.primary_arn(&arn))
    }

    /// Disables `key_id` in every region it exists in (a multi-Region key's state is per
    /// region). Nothing wrapped under it unwraps afterwards, until it is enabled again.
    fn retire(&self, key_id: &str) -> Result<(), VaultError> {
        let current = self.current_key_id()?;
        let id = key_id_of(key_id).to_string();
        if id.is_empty() || key_id_of(&current) == id {
            return Err(VaultError::Invalid(format!(
                "{key_id} is the current master key; rotate first"
            )));
        }
        let mut disabled_somewhere = false;
        for index in 0..self.regions.names().len() {
            let id = id.clone();
            let answer: Result<(), KmsError> =
                self.regions
                    .call_in(index, 1, move |client, region| async move {
                        client
                            .disable_key()
                            .key_id(&id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| {
                                kms_error(&format!("KMS cannot disable `{id}` in {region}"), e)
                            })
                    });
            match answer {
                Ok(()) => disabled_somewhere = true,
                // A key made before a replica region was added has no replica there.
                Err(e) if e.kind == KmsErrorKind::NotFound && index > 0 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if disabled_somewhere {
            Ok(())
        } else {
            Err(VaultError::NotFound(format!("master key {key_id}")))
        }
    }

    fn backend_calls(&self) -> u64 {
        self.regions.calls()
    }

    fn failovers(&self) -> u64 {
        self.regions.failovers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_come_from_arns_and_bare_ids() {
        assert_eq!(
            key_id_of("arn:aws:kms:us-east-1:111122223333:key/mrk-1a2b"),
            "mrk-1a2b"
        );
        assert_eq!(key_id_of("mrk-1a2b"), "mrk-1a2b");
        assert_eq!(key_id_of(""), "");
    }

    #[test]
    fn data_keys_must_be_32_bytes() {
        assert!(data_key(Some(Blob::new(vec![1; 32])), "data key").is_ok());
        for len in [0, 16, 31, 33, 64] {
            assert!(matches!(
                data_key(Some(Blob::new(vec![1; len])), "data key"),
                Err(VaultError::Corrupt(_))
            ));
        }
        assert!(matches!(
            data_key(None, "data key"),
            Err(VaultError::Corrupt(_))
        ));
    }
}
