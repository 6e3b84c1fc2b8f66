;; Imports a function no host provides.
(module
  (import "env" "frobnicate" (func $f))
  (func $main (export "_start") (call $f)))
