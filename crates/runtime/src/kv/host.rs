//! The guest side's host: wasi:keyvalue 0.2.0-draft2 and 0.2.0-draft bound with wasmtime's
//! `bindgen!` to [`Store`], in four parts: [`KvCtx`] (per-instance grants), [`KvView`] (the
//! context and the resource table), the `Host` impls, and [`add_to_linker`].
//!
//! `open` of a store that was not granted answers `access-denied` (whether or not it exists).

use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use super::{KvError, Store};
use std::sync::Arc;

mod draft2 {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::kv::KvError,
        },
    });
}

mod draft {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue-draft",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketDraft,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::kv::KvError,
        },
    });
}

use draft::wasi::keyvalue as v1;
use draft2::wasi::keyvalue as v2;

/// An open store, as a wasi:keyvalue@0.2.0-draft2 `bucket`.
pub struct Bucket(Store);

/// An open store, as a wasi:keyvalue@0.2.0-draft `bucket`.
pub struct BucketDraft(Store);

/// A compare-and-swap in progress: the value `key` held when it began.
pub struct Cas {
    store: Store,
    key: String,
    current: Option<Vec<u8>>,
}

/// Per-instance key-value state: the stores the guest was granted, already opened, by name. Built only
/// by [`crate::grants`]; [`KvCtx::default`] grants nothing, and cloning one is a reference count.
#[derive(Clone, Default)]
pub struct KvCtx {
    granted: Option<Arc<[(String, Store)]>>,
}

impl KvCtx {
    pub(crate) fn new(granted: Vec<(String, Store)>) -> KvCtx {
        KvCtx { granted: (!granted.is_empty()).then(|| granted.into()) }
    }

    /// Whether no store is granted.
    pub fn is_empty(&self) -> bool {
        self.granted.is_none()
    }

    /// The names of the granted stores, in grant order.
    pub fn granted_names(&self) -> Vec<&str> {
        self.granted.as_deref().unwrap_or_default().iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A store that was not granted answers access-denied, whether or not it exists.
    fn open(&self, name: &str) -> Result<Store, KvError> {
        let granted = self.granted.as_deref().unwrap_or_default();
        granted.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).ok_or(KvError::AccessDenied)
    }
}

/// What the host functions see of the store's state.
pub struct KvView<'a> {
    pub ctx: &'a KvCtx,
    pub table: &'a mut ResourceTable,
}

impl From<ResourceTableError> for KvError {
    fn from(e: ResourceTableError) -> KvError {
        KvError::Other(e.to_string())
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds both wasi:keyvalue versions to `linker`.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, f: fn(&mut T) -> KvView<'_>) -> wasmtime::Result<()> {
    v2::store::add_to_linker::<T, HasKv>(linker, f)?;
    v2::atomics::add_to_linker::<T, HasKv>(linker, f)?;
    v2::batch::add_to_linker::<T, HasKv>(linker, f)?;
    v1::store::add_to_linker::<T, HasKv>(linker, f)?;
    v1::atomics::add_to_linker::<T, HasKv>(linker, f)?;
    v1::batch::add_to_linker::<T, HasKv>(linker, f)?;
    Ok(())
}

impl KvView<'_> {
    fn bucket(&self, b: &Resource<Bucket>) -> Result<Store, KvError> {
        Ok(self.table.get(b)?.0.clone())
    }

    fn bucket_draft(&self, b: &Resource<BucketDraft>) -> Result<Store, KvError> {
        Ok(self.table.get(b)?.0.clone())
    }
}

impl v2::store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let store = self.ctx.open(&identifier)?;
        Ok(self.table.push(Bucket(store))?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<v2::store::Error> {
        Ok(match err {
            KvError::NoSuchStore => v2::store::Error::NoSuchStore,
            KvError::AccessDenied => v2::store::Error::AccessDenied,
            KvError::Other(m) => v2::store::Error::Other(m),
        })
    }
}

impl v2::store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket(&b)?.get(&key).await
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.bucket(&b)?.set(&key, value).await
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), KvError> {
        self.bucket(&b)?.delete(&key).await
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        self.bucket(&b)?.exists(&key).await
    }

    async fn list_keys(&mut self, b: Resource<Bucket>, cursor: Option<String>) -> Result<v2::store::KeyResponse, KvError> {
        let page = self.bucket(&b)?.list(cursor.as_deref()).await?;
        Ok(v2::store::KeyResponse { keys: page.keys, cursor: page.cursor })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl v2::atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: i64) -> Result<i64, KvError> {
        self.bucket(&b)?.increment(&key, delta).await
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), v2::atomics::CasError>> {
        let Cas { store, key, current } = self.table.delete(cas)?;
        match store.swap(&key, current.as_deref(), value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Handed back with what the key holds now, so the guest can retry from it.
                let now = match store.get(&key).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(v2::atomics::CasError::StoreError(self.convert(e)))),
                };
                let again = self.table.push(Cas { store, key, current: now })?;
                Ok(Err(v2::atomics::CasError::CasFailed(again)))
            }
            Err(e) => Ok(Err(v2::atomics::CasError::StoreError(self.convert(e)))),
        }
    }
}

impl KvView<'_> {
    fn convert(&self, e: KvError) -> v2::store::Error {
        match e {
            KvError::NoSuchStore => v2::store::Error::NoSuchStore,
            KvError::AccessDenied => v2::store::Error::AccessDenied,
            KvError::Other(m) => v2::store::Error::Other(m),
        }
    }
}

impl v2::atomics::HostCas for KvView<'_> {
    async fn new(&mut self, b: Resource<Bucket>, key: String) -> Result<Resource<Cas>, KvError> {
        let store = self.bucket(&b)?;
        let current = store.get(&key).await?;
        Ok(self.table.push(Cas { store, key, current })?)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.table.get(&cas)?.current.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl v2::batch::Host for KvView<'_> {
    async fn get_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        self.bucket(&b)?.get_many(keys).await
    }

    async fn set_many(&mut self, b: Resource<Bucket>, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.bucket(&b)?.set_many(entries).await
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> Result<(), KvError> {
        self.bucket(&b)?.delete_many(keys).await
    }
}

impl v1::store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<BucketDraft>, KvError> {
        let store = self.ctx.open(&identifier)?;
        Ok(self.table.push(BucketDraft(store))?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<v1::store::Error> {
        Ok(match err {
            KvError::NoSuchStore => v1::store::Error::NoSuchStore,
            KvError::AccessDenied => v1::store::Error::AccessDenied,
            KvError::Other(m) => v1::store::Error::Other(m),
        })
    }
}

impl v1::store::HostBucket for KvView<'_> {
    async fn get(&mut self, b: Resource<BucketDraft>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket_draft(&b)?.get(&key).await
    }

    async fn set(&mut self, b: Resource<BucketDraft>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.bucket_draft(&b)?.set(&key, value).await
    }

    async fn delete(&mut self, b: Resource<BucketDraft>, key: String) -> Result<(), KvError> {
        self.bucket_draft(&b)?.delete(&key).await
    }

    async fn exists(&mut self, b: Resource<BucketDraft>, key: String) -> Result<bool, KvError> {
        self.bucket_draft(&b)?.exists(&key).await
    }

    /// The draft's cursor is a position: the number of keys already listed.
    async fn list_keys(&mut self, b: Resource<BucketDraft>, cursor: Option<u64>) -> Result<v1::store::KeyResponse, KvError> {
        let keys = super::all_keys(&self.bucket_draft(&b)?).await?;
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX).min(keys.len());
        let end = (start + super::MAX_BATCH).min(keys.len());
        let next = (end < keys.len()).then_some(end as u64);
        Ok(v1::store::KeyResponse { keys: keys[start..end].to_vec(), cursor: next })
    }

    async fn drop(&mut self, b: Resource<BucketDraft>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl v1::atomics::Host for KvView<'_> {
    async fn increment(&mut self, b: Resource<BucketDraft>, key: String, delta: u64) -> Result<u64, KvError> {
        let delta = i64::try_from(delta).map_err(|_| KvError::Other("increment would overflow".into()))?;
        let n = self.bucket_draft(&b)?.increment(&key, delta).await?;
        u64::try_from(n).map_err(|_| KvError::Other("the counter is negative".into()))
    }
}

impl v1::batch::Host for KvView<'_> {
    async fn get_many(&mut self, b: Resource<BucketDraft>, keys: Vec<String>) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let found = self.bucket_draft(&b)?.get_many(keys).await?;
        Ok(found.into_iter().map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    async fn set_many(&mut self, b: Resource<BucketDraft>, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.bucket_draft(&b)?.set_many(entries).await
    }

    async fn delete_many(&mut self, b: Resource<BucketDraft>, keys: Vec<String>) -> Result<(), KvError> {
        self.bucket_draft(&b)?.delete_many(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_was_not_granted_is_access_denied() {
        let home = crate::home::Home::at("/nonexistent-wasmcell-home");
        let grant = crate::policy::KvGrant { name: "cache".into(), backend: crate::policy::KvBackend::Memory };
        let store = super::super::open(&home, "app", &grant).unwrap();
        let ctx = KvCtx::new(vec![("cache".into(), store)]);
        assert!(ctx.open("cache").is_ok());
        assert_eq!(ctx.open("other").err(), Some(KvError::AccessDenied));
        assert_eq!(KvCtx::default().open("cache").err(), Some(KvError::AccessDenied));
    }
}
