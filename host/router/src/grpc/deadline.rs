//! The body-read deadline of a gRPC request: tonic decodes the message from the body itself, so the
//! timer goes around the body, not around a read of it as on the HTTP side.

use std::time::Duration;

use crate::Error;

/// A request body that fails once it has been waited for longer than a timeout (the host's body-read
/// timeout): the error is the gRPC status for [`Error::BodyTimeout`], which tonic answers as it is. No
/// timer until the body is first waited for.
pub(crate) struct Deadline<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Deadline<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Deadline {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let error = Error::BodyTimeout {
                    secs: timeout.as_secs(),
                };
                Poll::Ready(Some(Err(Box::new(super::status(&error)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
