//! The gRPC front end (tonic): the `pyward.v1.Pyward` service of
//! proto/pyward/v1/pyward.proto, served on the HTTP port (requests with a
//! `/pyward.v1.Pyward/` path are routed here; HTTP/2 without TLS).
//!
//! A thin layer over the HTTP handlers' shared steps: the same bearer-token
//! tenants, the same request checks and image routing (a gRPC request is
//! turned into the JSON request body and goes through the same `admit`), the
//! same admission, job store, cancelling, job events (`watch_job`) and
//! errors. Message conversions live in `convert`.

mod convert;

use super::error::ApiError;
use super::handlers::{self, AppState};
use crate::executor::admission::Tenant;
use crate::executor::metrics::GrpcMethod;
use futures_util::Stream;
use proto::pyward_server::{Pyward, PywardServer};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The messages, enums, client and server generated from
/// proto/pyward/v1/pyward.proto (package `pyward.v1`); documented there.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/pyward.v1.rs"));
}

/// The HTTP route that carries every call of the service.
pub(super) const ROUTE: &str = "/pyward.v1.Pyward/{*method}";

/// The service: the state it shares with the HTTP handlers.
pub(super) struct GrpcApi {
    state: Arc<AppState>,
}

/// The tower service to route [`ROUTE`] to; messages up to `max_body` bytes.
pub(super) fn service(state: Arc<AppState>, max_body: usize) -> PywardServer<GrpcApi> {
    PywardServer::new(GrpcApi { state }).max_decoding_message_size(max_body)
}

fn status(error: ApiError) -> Status {
    error.to_grpc_status()
}

fn shutting_down() -> Status {
    status(ApiError::Unavailable {
        code: "shutting_down",
        message: "the server is shutting down; the job goes on after its restart (GetJob or WatchJob it then)".into(),
        retry_after: std::time::Duration::from_secs(5),
    })
}

impl GrpcApi {
    /// Counts the call and finds its tenant from `authorization` metadata.
    fn tenant<T>(&self, method: GrpcMethod, request: &Request<T>) -> Result<Arc<Tenant>, Status> {
        self.state.queue.metrics.grpc_call(method);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        handlers::authenticate_bearer(&self.state, authorization).map_err(status)
    }

    /// Checks a run request exactly as the HTTP API checks its body; returns
    /// the checked request and that body (what a job stores).
    fn admit(
        &self,
        tenant: &Tenant,
        request: &proto::RunRequest,
    ) -> Result<(handlers::Admitted, String), Status> {
        let body = convert::request_body(request).map_err(status)?;
        let admitted = handlers::admit(
            &self.state.policies,
            &self.state.queue.executor,
            tenant,
            body.as_bytes(),
        )
        .map_err(status)?;
        Ok((admitted, body))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Pyward for GrpcApi {
    async fn run(
        &self,
        request: Request<proto::RunRequest>,
    ) -> Result<Response<proto::Outcome>, Status> {
        let tenant = self.tenant(GrpcMethod::Run, &request)?;
        let (admitted, _) = self.admit(&tenant, request.get_ref())?;
        let outcome = handlers::run_now(&self.state, &tenant, admitted)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::outcome(
            &outcome,
            super::trace::current(),
        )))
    }

    async fn submit(
        &self,
        request: Request<proto::RunRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let tenant = self.tenant(GrpcMethod::Submit, &request)?;
        let (_, body) = self.admit(&tenant, request.get_ref())?;
        let job = handlers::enqueue(&self.state, &tenant, body)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn get_job(
        &self,
        request: Request<proto::GetJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let tenant = self.tenant(GrpcMethod::GetJob, &request)?;
        let job = handlers::find_job(&self.state, &tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::job(&job)))
    }

    async fn cancel_job(
        &self,
        request: Request<proto::CancelJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let tenant = self.tenant(GrpcMethod::CancelJob, &request)?;
        let cancelled = handlers::cancel_job(&self.state, &tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::job(&cancelled.job)))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<proto::WatchJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let tenant = self.tenant(GrpcMethod::WatchJob, &request)?;
        let id = request.into_inner().id;
        // The outcome carries the trace id of the job's Submit, as GetJob's does.
        let trace_id = handlers::find_job(&self.state, &tenant, &id)
            .await
            .map_err(status)?
            .trace_id;
        let updates = handlers::watch_job(&self.state, &tenant, &id)
            .await
            .map_err(status)?;
        // Ends after the last event of the job; if the updates stop before
        // (the server is shutting down), ends with UNAVAILABLE instead, so a
        // client can tell the two apart and ask again later.
        let shutdown = self.state.shutdown.clone();
        let events = futures_util::stream::unfold(Some(updates), move |updates| {
            let (id, trace_id) = (id.clone(), trace_id.clone());
            let shutdown = shutdown.clone();
            async move {
                let mut updates = updates?;
                let Some(update) = updates.recv().await else {
                    let cut_short = if *shutdown.borrow() {
                        shutting_down()
                    } else {
                        // The job could no longer be read (see the server log).
                        status(ApiError::Internal)
                    };
                    return Some((Err(cut_short), None));
                };
                let event = convert::event(&id, update, &trace_id)?;
                Some((Ok(event), Some(updates)))
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_policies(
        &self,
        request: Request<proto::ListPoliciesRequest>,
    ) -> Result<Response<proto::ListPoliciesResponse>, Status> {
        let tenant = self.tenant(GrpcMethod::ListPolicies, &request)?;
        let policies = handlers::tenant_policies(&self.state, &tenant)
            .enumerate()
            .map(|(i, policy)| proto::Policy {
                name: policy.name.clone(),
                default: i == 0,
                limits: Some(convert::limits(&policy.limits)),
            })
            .collect();
        Ok(Response::new(proto::ListPoliciesResponse { policies }))
    }

    async fn list_images(
        &self,
        request: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let tenant = self.tenant(GrpcMethod::ListImages, &request)?;
        let images = handlers::tenant_images(&self.state, &tenant)
            .into_iter()
            .map(convert::image)
            .collect();
        Ok(Response::new(proto::ListImagesResponse { images }))
    }
}
