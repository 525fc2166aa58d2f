//! A body that must keep moving: no frame for `--body-timeout` ends it with `BodyError::Timeout`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a watched body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body data for {}s (--body-timeout)", .after.as_secs())]
    Timeout { after: Duration },
    #[error(transparent)]
    Body(#[from] hyper::Error),
}

impl BodyError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Timeout { .. })
    }
}

/// Whether `e` or one of its sources is a body timeout.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(e) = current {
        if e.downcast_ref::<BodyError>()
            .is_some_and(BodyError::is_timeout)
        {
            return true;
        }
        current = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// Passes frames through; each frame re-arms the timer. A live SSE stream (data or pings)
    /// never trips it.
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Sleep,
        after: Duration,
        timed_out: bool,
    }
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, after: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            timer: tokio::time::sleep(after),
            after,
            timed_out: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                let deadline = Instant::now() + *this.after;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(frame.map_err(BodyError::from)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.poll(cx) {
                Poll::Ready(()) => {
                    *this.timed_out = true;
                    Poll::Ready(Some(Err(BodyError::Timeout { after: *this.after })))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_a_moving_one_does_not() {
        let (mut tx, body) = hyper_body_channel();
        let mut watched = Box::pin(IdleBody::new(body, Duration::from_secs(5)));
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = tx.send_data(Bytes::from_static(b"ping")).await;
            }
            // Then silence, with the sender kept alive.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let frame = watched.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"ping"));
        }
        let err = watched.frame().await.unwrap().unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(is_body_timeout(&err));
        assert!(watched.frame().await.is_none());
    }

    /// A body fed by hand, with `hyper::Error` as its error type like `Incoming`.
    fn hyper_body_channel() -> (TestSender, TestBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (TestSender(tx), TestBody(rx))
    }

    struct TestSender(tokio::sync::mpsc::Sender<Bytes>);
    impl TestSender {
        async fn send_data(&mut self, b: Bytes) -> Result<(), ()> {
            self.0.send(b).await.map_err(|_| ())
        }
    }

    struct TestBody(tokio::sync::mpsc::Receiver<Bytes>);
    impl Body for TestBody {
        type Data = Bytes;
        type Error = hyper::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }
}
