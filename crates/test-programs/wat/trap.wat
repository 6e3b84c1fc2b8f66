;; Traps three calls deep so the backtrace has names to show: _start -> outer -> boom.
(module
  (func $boom unreachable)
  (func $outer (call $boom))
  (func $main (export "_start") (call $outer)))
