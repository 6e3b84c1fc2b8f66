;; A module with entry points besides `_start`, for the shim's `file.wasm#func`:
;; `_start` prints "start", `greet` prints "greet", `code` returns 3 (an exit code), `add` takes parameters.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "start\n")
  (data (i32.const 32) "greet\n")
  (func $print (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (call $print (i32.const 16) (i32.const 6)))
  (func (export "greet") (call $print (i32.const 32) (i32.const 6)))
  (func (export "code") (result i32) (i32.const 3))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))
