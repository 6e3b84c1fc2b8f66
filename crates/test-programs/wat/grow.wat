;; Grows memory one 64 KiB page at a time until memory.grow fails, then traps (as a guest that
;; cannot handle allocation failure would).
(module
  (memory 1)
  (func $main (export "_start")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
