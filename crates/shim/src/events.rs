//! containerd's task events (`/tasks/create`, `/tasks/start`, `/tasks/exit`, `/tasks/oom`, ...), published
//! in order by a thread of their own, so that a task call never waits for containerd to take its event.

use std::sync::Mutex;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

/// containerd's events (TaskCreate, TaskStart, TaskExit, …), published over its ttrpc API by one thread,
/// in the order they happened. A task call answers without waiting for containerd to take its event
/// (about a millisecond a call, measured), as runc's shim does.
pub(crate) struct Events {
    queue: Mutex<Option<std::sync::mpsc::Sender<Event>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A topic and its event.
type Event = (&'static str, Box<dyn MessageDyn>);

impl Events {
    pub(crate) fn start(publisher: RemotePublisher, namespace: String) -> Option<Events> {
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    if let Err(e) = publisher.publish(Context::default(), topic, &namespace, event) {
                        log::warn!("failed to publish {topic}: {e}");
                    }
                }
            })
            .map_err(|e| log::error!("cannot start the events thread: {e}"))
            .ok()?;
        Some(Events { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    pub(crate) fn send(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Some(q) = self.queue.lock().unwrap().as_ref() {
            let _ = q.send((topic, event));
        }
    }

    pub(crate) fn flush(&self) {
        drop(self.queue.lock().unwrap().take());
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}
