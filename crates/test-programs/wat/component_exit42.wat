;; A wasi:cli/command component that exits with code 42 through wasi:cli/exit#exit-with-code
;; (WASI 0.2.12), the only way a component can report a code other than 0 or 1.
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit-with-code (canon lower (func $exit "exit-with-code")))
  (core instance $host (export "exit-with-code" (func $exit-with-code)))
  (core module $m
    (import "host" "exit-with-code" (func $exit-with-code (param i32)))
    (func (export "run") (result i32)
      (call $exit-with-code (i32.const 42))
      (i32.const 0)))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))
