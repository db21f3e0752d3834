//! End-to-end tests: they run the real `plinth` binary and talk to it with real clients (curl, openssl).

#[path = "../support/mod.rs"]
mod support;

mod attack;
mod batch;
mod capacity;
mod cli;
mod cluster;
mod crash;
mod disk;
mod embedded;
mod endpoint;
mod fixture;
mod grpc;
mod host;
mod image;
mod observe;
mod oip;
mod pod;
mod pods;
mod providers;
mod science;
mod score;
mod storage;
