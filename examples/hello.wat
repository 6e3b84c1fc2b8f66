;; wasmcell's smallest example: prints "hello from wasmcell" through WASI preview 1 (run: wasmcell run examples/hello.wat).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasmcell\n")
  (func $main (export "_start")
    ;; iovec at 0: base 16, length 20
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 20))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
