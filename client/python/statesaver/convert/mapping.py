"""mapping -- gate orders and biases of PyTorch and Keras cells in the
worker's TensorFlow layout (written down in docs/worker.md, "Converters").

PyTorch (weights [G*H, in], rows in gate blocks):
  LSTM  i, f, g, o; two biases b_ih + b_hh  ->  TF i, j(=g), f, o, one bias
        (their sum), forget_bias = 0; kernel = [W_ih^T ; W_hh^T]
        [in+P, 4H]; weight_hr [P, H] -> projection/kernel = weight_hr^T.
  GRU   r, z, n  ->  reset_after=true z, r, h: kernel = W_ih^T, recurrent
        = W_hh^T (columns reordered), bias = [b_ih; b_hh] [2, 3H]
        (b_hn stays inside r * (W_hn h + b_hn), as in PyTorch).
  RNN   kernel = [W_ih^T ; W_hh^T], bias = b_ih + b_hh.
Keras (kernel [in, G*H], recurrent_kernel [H, G*H], columns in blocks):
  LSTM  i, f, c, o  ->  i, j(=c), f, o; kernel = [kernel ; recurrent_kernel];
        forget_bias = 0 (unit_forget_bias only initialises the saved bias).
  GRU   z, r, h; reset_after=true: the same layout as ours (bias [2, 3H]);
        reset_after=false: gates/kernel = [kernel ; recurrent][:, r|z]
        (TF GRUCell order r, u with u = z), candidate = the h block,
        gates/bias = [b_r, b_z], candidate/bias = b_h.
  SimpleRNN  kernel = [kernel ; recurrent_kernel].
"""
import numpy as np


def blocks(a, order, axis):
    """a's G equal blocks along axis, taken in `order`."""
    parts = np.split(np.asarray(a, np.float32), len(order), axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


TORCH_LSTM_TO_TF = (0, 2, 1, 3)  # i, f, g, o -> i, g, f, o
TORCH_GRU_TO_TF = (1, 0, 2)      # r, z, n -> z, r, n
KERAS_LSTM_TO_TF = (0, 2, 1, 3)  # i, f, c, o -> i, c, f, o


def torch_lstm(w_ih, w_hh, b_ih, b_hh, w_hr=None):
    """TF tensors of one PyTorch LSTM layer (biases may be None)."""
    G4 = w_ih.shape[0]
    bias = np.zeros(G4, np.float32)
    if b_ih is not None:
        bias = np.asarray(b_ih, np.float32) + np.asarray(b_hh, np.float32)
    kernel = np.concatenate([np.asarray(w_ih, np.float32).T, np.asarray(w_hh, np.float32).T], 0)
    t = {"kernel": blocks(kernel, TORCH_LSTM_TO_TF, 1), "bias": blocks(bias, TORCH_LSTM_TO_TF, 0)}
    if w_hr is not None:
        t["projection/kernel"] = np.asarray(w_hr, np.float32).T
    return t


def torch_gru(w_ih, w_hh, b_ih, b_hh):
    G3 = w_ih.shape[0]
    zb = np.zeros(G3, np.float32)
    bi = zb if b_ih is None else np.asarray(b_ih, np.float32)
    bh = zb if b_hh is None else np.asarray(b_hh, np.float32)
    return {"kernel": blocks(np.asarray(w_ih, np.float32).T, TORCH_GRU_TO_TF, 1),
            "recurrent_kernel": blocks(np.asarray(w_hh, np.float32).T, TORCH_GRU_TO_TF, 1),
            "bias": np.stack([blocks(bi, TORCH_GRU_TO_TF, 0), blocks(bh, TORCH_GRU_TO_TF, 0)])}


def torch_rnn(w_ih, w_hh, b_ih, b_hh):
    H = w_ih.shape[0]
    bias = np.zeros(H, np.float32)
    if b_ih is not None:
        bias = np.asarray(b_ih, np.float32) + np.asarray(b_hh, np.float32)
    return {"kernel": np.concatenate([np.asarray(w_ih, np.float32).T,
                                      np.asarray(w_hh, np.float32).T], 0),
            "bias": bias}


def keras_lstm(kernel, recurrent, bias):
    H4 = kernel.shape[1]
    b = np.zeros(H4, np.float32) if bias is None else np.asarray(bias, np.float32)
    k = np.concatenate([np.asarray(kernel, np.float32), np.asarray(recurrent, np.float32)], 0)
    return {"kernel": blocks(k, KERAS_LSTM_TO_TF, 1), "bias": blocks(b, KERAS_LSTM_TO_TF, 0)}


def keras_gru(kernel, recurrent, bias, reset_after):
    kernel = np.asarray(kernel, np.float32)
    recurrent = np.asarray(recurrent, np.float32)
    H = recurrent.shape[0]
    if reset_after:
        b = np.zeros((2, 3 * H), np.float32) if bias is None else np.asarray(bias, np.float32)
        return {"kernel": kernel, "recurrent_kernel": recurrent, "bias": b}
    b = np.zeros(3 * H, np.float32) if bias is None else np.asarray(bias, np.float32)
    k = np.concatenate([kernel, recurrent], 0)  # [in+H, 3H] blocks z, r, h
    z, r, h = np.split(k, 3, axis=1)
    bz, br, bh = np.split(b, 3)
    return {"gates/kernel": np.concatenate([r, z], 1), "gates/bias": np.concatenate([br, bz]),
            "candidate/kernel": h, "candidate/bias": bh}


def keras_simple_rnn(kernel, recurrent, bias):
    H = recurrent.shape[0]
    b = np.zeros(H, np.float32) if bias is None else np.asarray(bias, np.float32)
    return {"kernel": np.concatenate([np.asarray(kernel, np.float32),
                                      np.asarray(recurrent, np.float32)], 0), "bias": b}
