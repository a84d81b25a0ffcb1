"""GPU time of each sampling processor on a 128k vocabulary, each captured in a CUDA graph (batch 1 and 16).

Run: python bench/probes/processor_kernels.py
"""
import torch



def graph_time(fn, reps=200):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    return replay_time(graph, reps)


def replay_time(graph, reps=200):
    """Microseconds per replay of ``graph``, replayed ``reps`` times back to back."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1000


def main():
    from genplug.plugins.processors.repetition_penalty import RepetitionPenaltyLogitsProcessor
    from genplug.plugins.processors.temperature import TemperatureLogitsWarper
    from genplug.plugins.processors.top_k import TopKLogitsWarper
    from genplug.plugins.processors.top_p import TopPLogitsWarper
    from genplug.plugins.processors.truncation import TruncationGroup

    vocab = 128256
    for batch in (1, 16):
        scores = torch.randn(batch, vocab, device="cuda")
        ids = torch.randint(0, vocab, (batch, 384), device="cuda")
        top_k = TopKLogitsWarper(50)
        cells = {
            "temperature": TemperatureLogitsWarper(0.7),
            "repetition_penalty": RepetitionPenaltyLogitsProcessor(1.1),
            "top_k": top_k,
            "top_p (full sort)": TopPLogitsWarper(0.9),
            "top_k+top_p group": TruncationGroup(top_k, [TopPLogitsWarper(0.9)]),
        }
        for name, proc in cells.items():
            print(f"b{batch} {name:22} {graph_time(lambda: proc(ids, scores.clone())):7.1f} us", flush=True)
        print(f"b{batch} {'clone only':22} {graph_time(lambda: scores.clone()):7.1f} us")
        print(f"b{batch} {'softmax+exp race':22} "
              f"{graph_time(lambda: torch.argmax(torch.softmax(scores, -1) / torch.empty_like(scores).exponential_(1), -1)):7.1f} us")
        print(f"b{batch} {'argmax':22} {graph_time(lambda: torch.argmax(scores, -1)):7.1f} us")
        print(f"b{batch} {'topk 50 alone':22} {graph_time(lambda: torch.topk(scores, 50)):7.1f} us")


if __name__ == "__main__":
    main()
