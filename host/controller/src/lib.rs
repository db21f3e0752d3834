//! The thin Kubernetes controller: it places Plinth hosts onto a cluster and scales them; it never
//! scores. A `PlinthService` (`plinth.dev/v1alpha1`) becomes a Deployment of `plinth serve` pods that
//! serve it declaratively, a Service, a ConfigMap, the keys' Secret and a PodDisruptionBudget.
//!
//! | job | module |
//! |---|---|
//! | the resource, its status and its CRD | `crd.rs` |
//! | checking a spec as `plinth deploy` would (pure) | `plan.rs` |
//! | the objects it runs on, typed (pure) | `render.rs` |
//! | the reconciler: apply, status, finalizer, error policy | `controller.rs` |
//! | pods scaled from the hosts' utilization | `scale.rs` |
//! | the controller's own metrics | `metrics.rs` |
//! | the process: watches, scaler loop, `/metrics` | `run.rs` |

#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod run;
pub mod scale;

pub use self::crd::{PlinthService, PlinthServiceSpec, PlinthServiceStatus};
