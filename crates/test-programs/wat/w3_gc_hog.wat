;; A GC heap that only grows: a linked list of 1 MiB arrays, each kept alive, until the host refuses.
;; Under a memory cap it must be refused like a linear memory (GC heaps are memory the host allocates).
(module
  (type $chunk (array (mut i8)))
  (type $node (struct (field $data (ref $chunk)) (field $next (ref null $node))))
  (func (export "_start")
    (local $head (ref null $node))
    (loop $more
      (local.set $head (struct.new $node (array.new_default $chunk (i32.const 1048576)) (local.get $head)))
      (br $more))))
