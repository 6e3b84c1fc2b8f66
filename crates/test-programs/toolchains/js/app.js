// A minimal wasi:http handler for componentize-js, through StarlingMonkey's fetch event:
// 200 `hello from js\n` to every request.
addEventListener('fetch', (event) => {
  event.respondWith(new Response('hello from js\n', { status: 200, headers: { 'content-type': 'text/plain' } }));
});
